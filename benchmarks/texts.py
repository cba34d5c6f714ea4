"""Synthetic corpora from templates, deterministic per seed, that tokenise like the real ones:
AG-News-like ``news_texts`` (~40 words, four topics: ``news_topics``), Big-Patent-like
``patent_texts`` (thousands of words: far beyond a 512-token window) and ``mixed_texts`` (mostly
news, some ~150-word digests and patents, shuffled)."""

from __future__ import annotations

import random
from collections.abc import Callable

def cap(text: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case proper nouns)."""
    return text[:1].upper() + text[1:]


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun

_COUNTRIES = ["France", "Germany", "Japan", "Brazil", "India", "Kenya", "Canada", "Mexico", "Egypt", "Australia",
              "South Korea", "Nigeria", "Indonesia", "Turkey", "Argentina", "Poland", "Vietnam", "Chile", "Ukraine",
              "Pakistan", "Spain", "Italy", "Ethiopia", "Peru", "the Philippines"]
_CITIES = ["Paris", "Berlin", "Tokyo", "Sao Paulo", "New Delhi", "Nairobi", "Ottawa", "Mexico City", "Cairo",
           "Sydney", "Seoul", "Lagos", "Jakarta", "Ankara", "Buenos Aires", "Warsaw", "Hanoi", "Santiago", "Kyiv",
           "Islamabad", "Madrid", "Rome", "Addis Ababa", "Lima", "Manila", "Geneva", "Brussels", "Washington"]
_AGENCIES = ["Reuters", "AP", "AFP", "Canadian Press", "Bloomberg"]
_OFFICIALS = ["the prime minister", "the foreign minister", "the president", "opposition leaders",
              "the defence ministry", "a government spokesman", "the interior minister", "election officials",
              "the UN envoy", "senior diplomats"]
_WORLD_ISSUES = ["a border dispute", "ceasefire talks", "a disputed election", "refugee flows", "a new trade pact",
                 "nuclear inspections", "flood relief", "a corruption inquiry", "drought aid",
                 "a hostage crisis", "constitutional reform", "peace negotiations"]
_TEAMS = ["Manchester United", "Real Madrid", "the Boston Red Sox", "the New York Yankees", "Bayern Munich",
          "the Los Angeles Lakers", "Juventus", "the Chicago Bears", "Arsenal", "the Toronto Maple Leafs",
          "Barcelona", "the Green Bay Packers", "Liverpool", "the San Antonio Spurs", "AC Milan"]
_ATHLETES = ["Roger Federer", "Serena Williams", "Michael Phelps", "Tiger Woods", "Lance Armstrong",
             "Paula Radcliffe", "Andy Roddick", "Thierry Henry", "Yao Ming", "Jana Novotna", "Ichiro Suzuki",
             "Kelly Holmes", "Shaquille O'Neal", "Marat Safin", "Ian Thorpe"]
_EVENTS = ["the Olympic final", "the Champions League", "the US Open", "the World Series", "the Tour de France",
           "the playoffs", "the season opener", "the Ryder Cup", "the Davis Cup semifinal", "the title race"]
_COMPANIES = ["Oracle", "PeopleSoft", "General Motors", "Delta Air Lines", "Wal-Mart", "Citigroup", "Boeing",
              "Sony", "Nokia", "Pfizer", "ExxonMobil", "Kmart", "Sears", "Merck", "Intel", "Google", "Yahoo",
              "Vodafone", "Airbus", "Toyota", "Unilever", "Siemens"]
_MARKET_THINGS = ["crude oil prices", "the dollar", "Treasury yields", "the Nasdaq", "the Dow Jones industrial average",
                  "the euro", "gold futures", "Asian stocks", "bond prices", "retail sales", "jobless claims",
                  "consumer confidence"]
_TECH_THINGS = ["a new search engine", "a faster microprocessor", "an open-source browser", "a Mars rover",
                "a space telescope", "a flat-panel display", "a music download service", "a broadband network",
                "a genome sequencing method", "a spam filter", "a handheld game console", "a wireless standard",
                "a hybrid car battery", "an antivirus update", "a climate model", "a fuel cell"]
_SCIENCE_BODIES = ["NASA", "the European Space Agency", "Microsoft", "IBM", "Apple", "researchers at MIT",
                   "scientists in Britain", "astronomers", "a team of biologists", "Linux developers",
                   "Sun Microsystems", "Intel engineers"]
_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve", "15", "20", "30"]
_DAYS = ["on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday", "over the weekend", "late on Sunday",
         "early on Saturday", "this week", "yesterday"]


def _news_world(r: random.Random) -> tuple[str, list[str]]:
    country, city, official, issue = r.choice(_COUNTRIES), r.choice(_CITIES), r.choice(_OFFICIALS), r.choice(_WORLD_ISSUES)
    headline = r.choice([
        f"{country} Vows to Press Ahead With {issue.split(' ', 1)[1].title()}",
        f"Talks on {issue.split(' ', 1)[1].title()} Stall in {city}",
        f"{country} Recalls Envoy Amid Row Over {issue.split(' ', 1)[1].title()}",
        f"Thousands Rally in {city} as Tensions Rise",
        f"UN Urges Calm After Clashes in {country}",
    ])
    body = [
        (f"{cap(official)} of {country} said {r.choice(_DAYS)} that {issue} would top the agenda when "
        f"regional leaders meet in {city} next month."),
        (f"At least {r.choice(_NUMBERS)} people were killed and dozens wounded when fighting broke out near the "
        f"capital, {r.choice(['police', 'witnesses', 'hospital officials', 'aid workers'])} said."),
        (f"The talks, which have dragged on for {r.choice(_NUMBERS)} months, are seen as a test of whether "
        f"{country} can rebuild ties with its neighbours."),
        f"Critics accused the government of using {issue} to distract voters from a slowing economy and rising prices.",
        (f"Diplomats in {r.choice(_CITIES)} said a compromise was possible but warned that both sides were under "
        f"pressure from hardliners at home."),
        f"{cap(official)} rejected calls for an international inquiry, saying the matter was an internal affair.",
    ]
    return headline, body


def _news_sports(r: random.Random) -> tuple[str, list[str]]:
    team, other, athlete, event = r.choice(_TEAMS), r.choice(_TEAMS), r.choice(_ATHLETES), r.choice(_EVENTS)
    score = f"{r.randint(1, 9)}-{r.randint(0, 8)}"
    headline = r.choice([
        f"{team} Beat {other} {score}",
        f"{athlete} Cruises Into Quarterfinals",
        f"{athlete} Out of {event.replace('the ', '').title()} With Injury",
        f"{team} Clinch Spot in {event.replace('the ', '').title()}",
        f"Late Goal Lifts {team} Past {other}",
    ])
    body = [
        (f"{athlete} overcame a slow start to win in straight sets {r.choice(_DAYS)}, setting up a meeting with the "
        f"defending champion in {event}."),
        (f"{team} scored twice in the final {r.choice(_NUMBERS)} minutes to beat {other} {score} and move "
        f"{r.choice(['two', 'three', 'five'])} points clear at the top of the table."),
        "The coach said the team had shown real character after losing its captain to a hamstring injury in the first half.",
        (f"{other} have now lost {r.choice(_NUMBERS)} of their last eleven games and face a difficult trip "
        f"to {r.choice(_CITIES)} next week."),
        (f"A crowd of more than {r.randint(20, 90)},000 watched as the home side dominated possession but struggled "
        f"to create clear chances."),
        f"{athlete}, who missed most of last season, said the win was the most satisfying of a long career.",
    ]
    return headline, body


def _news_business(r: random.Random) -> tuple[str, list[str]]:
    company, other, thing = r.choice(_COMPANIES), r.choice(_COMPANIES), r.choice(_MARKET_THINGS)
    pct = f"{r.randint(1, 19)}.{r.randint(0, 9)} percent"
    headline = r.choice([
        f"{company} Profit Rises {pct.replace(' percent', '%')} on Strong Demand",
        f"{company} Raises Bid for {other}",
        f"Stocks Fall as {thing.title()} Climb",
        f"{company} to Cut {r.randint(2, 15)},000 Jobs",
        f"{thing.title()} Steady Ahead of Fed Meeting",
    ])
    body = [
        (f"{company} said {r.choice(_DAYS)} that quarterly profit rose {pct}, beating Wall Street forecasts as "
        f"sales in Asia offset weak demand at home."),
        (f"Shares of {company} fell {r.randint(1, 9)} percent in early trading after the company cut its outlook for "
        f"the full year, citing higher fuel and raw material costs."),
        (f"{cap(thing)} rose for a {r.choice(['second', 'third', 'fourth'])} straight session as investors "
        f"weighed fresh data on inflation and consumer spending."),
        (f"Analysts said the {r.randint(2, 40)} billion dollar offer for {other} signalled a new wave of consolidation "
        f"in the industry."),
        "The Federal Reserve is widely expected to raise interest rates by a quarter point at its meeting next week.",
        (f"Executives told analysts on a conference call that cost cuts would save about {r.randint(100, 900)} "
        f"million dollars a year by 2006."),
    ]
    return headline, body


def _news_scitech(r: random.Random) -> tuple[str, list[str]]:
    body_name, thing, company = r.choice(_SCIENCE_BODIES), r.choice(_TECH_THINGS), r.choice(_COMPANIES)
    headline = r.choice([
        f"{body_name.split(' ')[0].title()} Unveils {thing.split(' ', 1)[1].title()}",
        f"Scientists Test {thing.split(' ', 1)[1].title()}",
        "Hackers Target Flaw in Popular Software",
        f"{company} Bets on {thing.split(' ', 1)[1].title()}",
        "Probe Sends Back First Images of Saturn Moon",
    ])
    body = [
        (f"{cap(body_name)} on {r.choice(['Monday', 'Tuesday', 'Thursday'])} unveiled {thing} that it says "
        f"will be {r.choice(_NUMBERS)} times faster than anything on the market."),
        ("The software, released as a free download, fixes a security hole that could let attackers take control of a "
        "computer through a specially crafted web page."),
        (f"Researchers said the results, published in the journal {r.choice(['Nature', 'Science', 'Cell'])}, could "
        f"help explain how the early solar system formed."),
        f"Analysts expect {thing} to reach stores before the holiday season, though pricing has not been announced.",
        (f"The spacecraft, launched {r.choice(_NUMBERS)} years ago, is expected to send data back to Earth until the "
        f"end of the decade."),
        "Privacy groups warned that the technology could be used to track users without their knowledge.",
    ]
    return headline, body


_NEWS_TOPICS: dict[str, Callable[[random.Random], tuple[str, list[str]]]] = {
    "world": _news_world,
    "sports": _news_sports,
    "business": _news_business,
    "sci_tech": _news_scitech,
}


def _one_news(r: random.Random, topic: str, target_words: int) -> str:
    headline, body = _NEWS_TOPICS[topic](r)
    agency = r.choice(_AGENCIES)
    r.shuffle(body)
    text = f"{headline} ({agency}) {agency} -"
    words = len(text.split())
    for sentence in body:
        if words >= target_words:
            break
        text += " " + sentence
        words += len(sentence.split())
    return text


def news_topics(n: int, seed: int = 0) -> list[str]:
    """The topic labels of ``news_texts(n, seed)``, in order."""
    r = random.Random(seed)
    return [list(_NEWS_TOPICS)[r.randrange(len(_NEWS_TOPICS))] for _ in range(n)]


def news_texts(n: int, seed: int = 0, words: tuple[int, int] = (15, 50)) -> list[str]:
    """``n`` AG-News-like items (headline, agency, body), each about ``words`` words long (~40 on average)."""
    topics = news_topics(n, seed)
    r = random.Random(seed + 1)
    return [_one_news(r, topic, r.randint(*words)) for topic in topics]


_PATENT_SUBJECTS = [
    ("a battery thermal management system", "battery pack", ["cell module", "coolant channel", "temperature sensor",
     "pump", "heat exchanger", "controller", "valve", "housing"], "electric vehicles"),
    ("a wearable heart-rate monitor", "wearable device", ["optical sensor", "light-emitting diode", "photodiode",
     "processor", "strap", "battery", "wireless transceiver", "display"], "physiological monitoring"),
    ("a variable-pitch wind turbine blade", "rotor blade", ["root section", "pitch bearing", "actuator", "spar cap",
     "trailing edge", "load sensor", "hub", "control unit"], "wind energy conversion"),
    ("a method of compressing neural network weights", "compression engine", ["weight matrix", "codebook",
     "quantisation unit", "memory buffer", "decoder", "scheduler", "cache", "accelerator"], "machine learning hardware"),
    ("a self-cleaning water filter", "filter assembly", ["filter cartridge", "inlet port", "outlet port",
     "backwash valve", "pressure sensor", "motor", "brush", "drain"], "water treatment"),
    ("an adjustable ergonomic office chair", "chair", ["seat pan", "backrest", "lumbar support", "gas spring",
     "tilt mechanism", "armrest", "base", "locking lever"], "furniture"),
]

_PATENT_VERBS = ["is coupled to", "is disposed adjacent to", "is in fluid communication with", "is mounted on",
                 "is electrically connected to", "is configured to cooperate with", "extends through",
                 "is received within", "is rotatably supported by", "is integrally formed with"]
_PATENT_PURPOSES = ["reduce energy consumption", "improve reliability", "lower manufacturing cost",
                    "increase accuracy", "extend service life", "simplify assembly", "reduce noise",
                    "improve user comfort", "prevent overheating", "minimise maintenance"]
_PATENT_MATERIALS = ["aluminium alloy", "stainless steel", "polycarbonate", "glass-fibre reinforced polymer",
                     "silicone rubber", "carbon fibre composite", "copper", "ceramic"]


def _one_patent(r: random.Random, target_words: int) -> str:
    title, device, parts, field_name = r.choice(_PATENT_SUBJECTS)
    numerals = {part: 100 + 2 * i + 2 * r.randint(0, 3) for i, part in enumerate(parts)}

    def ref(part: str) -> str:
        return f"the {part} {numerals[part]}"

    paragraphs = [
        title.upper().replace("A ", "", 1).replace("AN ", "", 1),
        "TECHNICAL FIELD",
        (f"The present disclosure relates generally to {field_name}, and more particularly to {title} and methods "
        f"of operating the same."),
        "BACKGROUND",
        (f"Conventional {device}s suffer from several drawbacks. In particular, known designs fail to "
        f"{r.choice(_PATENT_PURPOSES)} under varying operating conditions, and they require frequent adjustment by "
        f"trained personnel. Attempts to address these problems have generally increased the complexity and cost of "
        f"the {device}. There is therefore a need for an improved {device} that overcomes these limitations."),
        "SUMMARY",
        (f"According to one aspect, there is provided {title} comprising {', '.join(article(p) for p in parts[:-1])} and "
        f"{article(parts[-1])}. The arrangement makes it possible to {r.choice(_PATENT_PURPOSES)} and to "
        f"{r.choice(_PATENT_PURPOSES)} without additional components."),
        "DETAILED DESCRIPTION",
    ]
    words = sum(len(p.split()) for p in paragraphs)
    figure = 1
    while words < target_words:
        a, b = r.sample(parts, 2)
        sentences = [
            f"Referring now to FIG. {figure}, {ref(a)} {r.choice(_PATENT_VERBS)} {ref(b)}.",
            (f"In some embodiments, {ref(a)} is formed of {r.choice(_PATENT_MATERIALS)}, although other materials "
            f"may be used without departing from the scope of the disclosure."),
            (f"{cap(ref(b))} may be configured to {r.choice(_PATENT_PURPOSES)}, for example by adjusting an "
            f"operating parameter in response to a signal received from {ref(r.choice(parts))}."),
            (f"As shown in FIG. {figure}, a gap of between {r.randint(1, 5)} and {r.randint(6, 20)} millimetres may be "
            f"provided between {ref(a)} and {ref(b)}."),
            (f"It will be appreciated that {ref(a)} and {ref(b)} may be arranged in other configurations, and that the "
            f"illustrated embodiment is provided by way of example only."),
            (f"In operation, {ref(r.choice(parts))} {r.choice(_PATENT_VERBS)} {ref(r.choice(parts))} such that the "
            f"{device} can {r.choice(_PATENT_PURPOSES)}."),
        ]
        r.shuffle(sentences)
        paragraph = " ".join(sentences[: r.randint(3, 6)])
        paragraphs.append(paragraph)
        words += len(paragraph.split())
        figure += r.random() < 0.3
    paragraphs.append("CLAIMS")
    claim = (f"1. {title[0].upper() + title[1:]} comprising: "
             + "; ".join(f"{article(p)} that {r.choice(_PATENT_VERBS)} the {r.choice(parts)}" for p in parts)
             + f", wherein the {parts[0]} is configured to {r.choice(_PATENT_PURPOSES)}.")
    paragraphs.append(claim)
    for number in range(2, r.randint(4, 8)):
        paragraphs.append(f"{number}. The {device} of claim 1, wherein the {r.choice(parts)} is formed of "
                          f"{r.choice(_PATENT_MATERIALS)}.")
    return "\n\n".join(paragraphs)


def patent_texts(n: int, seed: int = 0, words: tuple[int, int] = (1500, 4000)) -> list[str]:
    """``n`` Big-Patent-like descriptions of ``words`` words (thousands: far beyond a 512-token window)."""
    r = random.Random(seed + 7919)
    return [_one_patent(r, r.randint(*words)) for _ in range(n)]


def mixed_texts(n: int, seed: int = 0, medium_fraction: float = 0.1, long_fraction: float = 0.03) -> list[str]:
    """Mostly ~40-word news, ``medium_fraction`` longer news stories (~100-200 words, several items run
    together as in a digest) and ``long_fraction`` patent descriptions (thousands of words), shuffled."""
    r = random.Random(seed + 104729)
    n_long = round(n * long_fraction)
    n_medium = round(n * medium_fraction)
    n_short = n - n_long - n_medium
    short = news_texts(n_short, seed)
    medium_parts = news_texts(4 * n_medium, seed + 1, words=(35, 60))
    medium = [" ".join(medium_parts[4 * i : 4 * i + r.randint(2, 4)]) for i in range(n_medium)]
    long = patent_texts(n_long, seed)
    texts = short + medium + long
    r.shuffle(texts)
    return texts


INSTRUCTIONS = [
    "What is the topic of this text?",
    "What is the sentiment of this text?",
    "Which organisation is mentioned in this text?",
    "Where does this happen?",
]
