// The explorer page: plain JavaScript over the service's API routes (no build step, no libraries).
// Every request goes to this server, with the API key (if one was given) as "Authorization: Bearer".
"use strict";

(function () {
  const KEY_STORAGE = "inbedder-index-api-key";
  const SVG = "http://www.w3.org/2000/svg";
  const MAP_W = 640, MAP_H = 360, MAP_PAD = 24;
  // Okabe-Ito, then a few more distinguishable colours: cluster n gets COLOURS[n % length].
  const COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#7A6A00", "#332288",
    "#882255", "#44AA99", "#666666", "#AA4499"];

  const $ = (id) => document.getElementById(id);
  const state = {
    key: sessionStorage.getItem(KEY_STORAGE) || "",
    indexes: [],
    selected: new Map(), // instruction -> Set of answers the hits are filtered by
    lastHitIds: new Set(),
    searched: false,
    facetsRound: 0, // answers to an older request than the latest are dropped
    searchRound: 0,
  };

  // ------------------------------------------------------------------ talking to the server

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options) {
    const headers = { Accept: "application/json" };
    if (state.key) headers.Authorization = "Bearer " + state.key;
    const init = { method: "GET", headers };
    if (options && options.body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "cannot reach the server (" + error.message + ")");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body && body.error && body.error.message ? body.error.message : response.statusText;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  const indexPath = (suffix) => "../indexes/" + encodeURIComponent($("index").value) + suffix;

  // ------------------------------------------------------------------ messages

  function say(text) {
    $("status").textContent = text;
  }

  function fail(error) {
    const box = $("error");
    if (error.status === 401) {
      box.textContent = "This server needs an API key: enter it above and choose \u201cUse key\u201d. (" +
        error.message + ")";
      $("key").focus();
    } else {
      box.textContent = error.message;
    }
    box.hidden = false;
    say("");
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function option(value, label) {
    return element("option", { value }, label);
  }

  // ------------------------------------------------------------------ indexes and instructions

  function instructionsOfIndex() {
    const found = state.indexes.find((item) => item.name === $("index").value);
    return found ? found.instructions : [];
  }

  function chosenInstructions() {
    const first = $("instruction-1").value, second = $("instruction-2").value;
    return second && second !== first ? [first, second] : [first];
  }

  async function loadIndexes() {
    clearError();
    say("Loading the indexes\u2026");
    try {
      state.indexes = (await api("../indexes")).indexes;
    } catch (error) {
      fail(error);
      return;
    }
    const select = $("index");
    select.replaceChildren(...state.indexes.map((item) => option(item.name, item.name + " (" + item.documents +
      " documents)")));
    if (!state.indexes.length) {
      fail(new ApiError(404, "this server serves no index: start it with one, e.g. inbedder-index serve ./my-index"));
      return;
    }
    say(state.indexes.length + " index" + (state.indexes.length === 1 ? "" : "es") + " on this server.");
    indexChanged();
  }

  function indexChanged() {
    const instructions = instructionsOfIndex();
    $("instruction-1").replaceChildren(...instructions.map((text) => option(text, text)));
    $("instruction-2").replaceChildren(option("", "(none)"), ...instructions.map((text) => option(text, text)));
    if (instructions.length > 1) $("instruction-2").value = instructions[1];
    $("map-instruction").replaceChildren(...instructions.map((text) => option(text, text)));
    state.selected.clear();
    state.lastHitIds = new Set();
    state.searched = false;
    $("hits").hidden = true;
    $("hits-summary").textContent = "Type a query and press Enter.";
    clearMap();
    instructionsChanged();
  }

  function instructionsChanged() {
    const chosen = chosenInstructions();
    for (const instruction of [...state.selected.keys()]) {
      if (!chosen.includes(instruction)) state.selected.delete(instruction);
    }
    const two = chosen.length === 2;
    $("same-query").disabled = !two;
    $("query-2-field").hidden = !two || $("same-query").checked;
    $("query-1-label").textContent = two && !$("same-query").checked ? "Query under the first instruction" : "Query";
    renderFilters();
    loadFacets();
  }

  // ------------------------------------------------------------------ answer filters and facets

  // The "$answer" filter of the chosen answers, leaving out one instruction's own choice (a facet's
  // counts are over the documents that the other instructions' choices keep).
  function answerFilter(except) {
    const answers = {};
    for (const [instruction, chosen] of state.selected) {
      if (instruction !== except && chosen.size) answers[instruction] = [...chosen];
    }
    return Object.keys(answers).length ? { $answer: answers } : null;
  }

  function renderFilters() {
    const list = $("filter-list");
    list.replaceChildren();
    for (const [instruction, chosen] of state.selected) {
      for (const answer of chosen) {
        const button = element("button", { type: "button", class: "chip" });
        button.append(element("span", { class: "chip-text" }, instruction + " = " + answer),
          element("span", { "aria-hidden": "true" }, " \u00d7"));
        button.setAttribute("aria-label", "Remove filter: " + instruction + " = " + answer);
        button.addEventListener("click", () => toggleAnswer(instruction, answer));
        const item = element("li");
        item.append(button);
        list.append(item);
      }
    }
    $("filters").hidden = !list.children.length;
  }

  async function loadFacets() {
    const round = ++state.facetsRound;
    const focused = document.activeElement;
    const refocus = focused && focused.classList.contains("facet") ?
      [focused.getAttribute("data-instruction"), focused.getAttribute("data-answer")] : null;
    const box = $("facets");
    const groups = chosenInstructions().filter(Boolean).map((instruction) => {
      const group = element("section", { class: "facet-group" });
      group.append(element("h3", {}, instruction), element("p", { class: "hint" }, "Loading\u2026"));
      return [instruction, group];
    });
    box.replaceChildren(...groups.map(([, group]) => group));
    await Promise.all(groups.map(async ([instruction, group]) => {
      const params = new URLSearchParams({ instruction, k: "12" });
      const filter = answerFilter(instruction);
      if (filter) params.set("filter", JSON.stringify(filter));
      let facets;
      try {
        facets = (await api(indexPath("/facets?" + params))).facets;
        if (round !== state.facetsRound) return;
      } catch (error) {
        if (round !== state.facetsRound) return;
        group.lastChild.textContent = error.status === 401 ? "Needs the API key." : error.message;
        if (error.status === 401) fail(error);
        return;
      }
      const chosen = state.selected.get(instruction) || new Set();
      const list = element("ul", { class: "facets", "aria-label": "Answers to " + instruction });
      for (const facet of facets) {
        const pressed = chosen.has(facet.answer);
        const button = element("button", { type: "button", class: "facet", "aria-pressed": String(pressed),
          "data-instruction": instruction, "data-answer": facet.answer });
        button.append(element("span", { class: "facet-answer" }, facet.answer),
          element("span", { class: "count" }, String(facet.count)),
          element("span", { class: "visually-hidden" }, facet.count === 1 ? " document" : " documents"));
        button.addEventListener("click", () => toggleAnswer(instruction, facet.answer));
        const item = element("li");
        item.append(button);
        list.append(item);
      }
      group.lastChild.replaceWith(facets.length ? list : element("p", { class: "hint" }, "No answers stored."));
      if (refocus && refocus[0] === instruction) {
        const again = [...list.querySelectorAll("button")].find((b) => b.getAttribute("data-answer") === refocus[1]);
        if (again) again.focus(); // keyboard users keep their place when the facets are redrawn
      }
    }));
  }

  function toggleAnswer(instruction, answer) {
    const chosen = state.selected.get(instruction) || new Set();
    if (chosen.has(answer)) chosen.delete(answer); else chosen.add(answer);
    if (chosen.size) state.selected.set(instruction, chosen); else state.selected.delete(instruction);
    renderFilters();
    loadFacets();
    if (state.searched) search();
  }

  // ------------------------------------------------------------------ search

  async function search() {
    clearError();
    const instructions = chosenInstructions();
    const first = $("query-1").value.trim();
    const second = instructions.length === 2 && !$("same-query").checked ? $("query-2").value.trim() : first;
    if (!first || !second) {
      fail(new ApiError(400, "Type a query" + (first ? " under the second instruction" : "") + " first."));
      (first ? $("query-2") : $("query-1")).focus();
      return;
    }
    const queries = {};
    queries[instructions[0]] = first;
    if (instructions.length === 2) queries[instructions[1]] = second;
    const body = { queries, k: Math.max(1, Math.min(100, parseInt($("k").value, 10) || 10)) };
    const filter = answerFilter(null);
    if (filter) body.filter = filter;
    say("Searching\u2026");
    const round = ++state.searchRound;
    let hits;
    try {
      hits = (await api(indexPath("/search"), { body })).hits;
    } catch (error) {
      if (round === state.searchRound) fail(error);
      return;
    }
    if (round !== state.searchRound) return;
    state.searched = true;
    renderHits(hits, instructions);
    const filtered = filter ? ", filtered by answer" : "";
    say(hits.length + " hit" + (hits.length === 1 ? "" : "s") + " under " + instructions.length + " instruction" +
      (instructions.length === 1 ? "" : "s") + filtered + ".");
  }

  function renderHits(hits, instructions) {
    const head = $("hits-head");
    head.replaceChildren(element("th", { scope: "col" }, "#"), element("th", { scope: "col" }, "Document"));
    for (const instruction of instructions) {
      head.append(element("th", { scope: "col" }, "Answer and score under \u201c" + instruction + "\u201d"));
    }
    if (instructions.length > 1) head.append(element("th", { scope: "col" }, "Combined score"));
    const rows = hits.map((hit, position) => {
      const row = element("tr", { "data-id": hit.id });
      row.append(element("td", { class: "rank", "data-label": "#" }, String(position + 1)));
      const doc = element("td", { class: "doc", "data-label": "Document" });
      doc.append(element("span", { class: "text" }, hit.text), element("span", { class: "id" }, hit.id));
      row.append(doc);
      for (const instruction of instructions) {
        const cell = element("td", { class: "answer-cell", "data-label": instruction });
        const answer = hit.answers ? hit.answers[instruction] : null;
        const score = hit.scores ? hit.scores[instruction] : hit.score;
        cell.append(element("span", { class: "answer" + (answer ? "" : " none") }, answer || "(no answer)"),
          element("span", { class: "score" }, formatScore(score)));
        row.append(cell);
      }
      if (instructions.length > 1) {
        row.append(element("td", { class: "score total", "data-label": "Combined score" }, formatScore(hit.score)));
      }
      return row;
    });
    $("hits-body").replaceChildren(...rows);
    $("hits-caption").textContent = "Hits under " + instructions.join(" and ");
    $("hits").hidden = !hits.length;
    $("hits-summary").textContent = hits.length ? "" : "No document matches.";
    state.lastHitIds = new Set(hits.map((hit) => hit.id));
    markHitsOnMap();
  }

  function formatScore(score) {
    return typeof score === "number" ? score.toFixed(3) : "\u2013";
  }

  // ------------------------------------------------------------------ the map

  function clearMap() {
    $("map").replaceChildren();
    $("legend").replaceChildren();
    $("map-caption").textContent = "Choose an instruction and draw its map.";
  }

  async function drawMap() {
    clearError();
    const instruction = $("map-instruction").value;
    const params = new URLSearchParams({ instruction, limit: $("limit").value || "2000",
      clusters: $("clusters").value || "8" });
    say("Drawing the map\u2026");
    let map;
    try {
      map = await api(indexPath("/map?" + params));
    } catch (error) {
      fail(error);
      return;
    }
    renderMap(map);
    say("Map drawn: " + map.points.length + " documents in " + map.clusters.length + " clusters.");
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderMap(map) {
    const points = map.points;
    const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (x) => MAP_PAD + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (MAP_W - 2 * MAP_PAD);
    const sy = (y) => MAP_H - MAP_PAD - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (MAP_H - 2 * MAP_PAD);
    const colour = (cluster) => COLOURS[cluster % COLOURS.length];
    const dots = svg("g", { class: "points" });
    const sums = new Map();
    for (const p of points) {
      const [cx, cy] = [sx(p.x), sy(p.y)];
      const dot = svg("circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 4, fill: colour(p.cluster),
        "data-id": p.id, "data-cluster": p.cluster });
      dot.append(svg("title", {}, (p.answer ? p.answer + ": " : "") + p.text));
      dots.append(dot);
      const sum = sums.get(p.cluster) || [0, 0, 0];
      sums.set(p.cluster, [sum[0] + cx, sum[1] + cy, sum[2] + 1]);
    }
    const labels = svg("g", { class: "labels", "aria-hidden": "true" });
    for (const cluster of map.clusters) {
      const sum = sums.get(cluster.cluster);
      if (!sum) continue;
      const x = Math.min(MAP_W - 70, Math.max(70, sum[0] / sum[2]));
      const y = Math.max(14, sum[1] / sum[2] - 9); // just above the cluster's centre, not over its points
      labels.append(svg("text", { x: x.toFixed(1), y: y.toFixed(1), "text-anchor": "middle",
        class: "map-label" }, truncate(cluster.label, 24)));
    }
    $("map").replaceChildren(svg("rect", { class: "frame", x: 0, y: 0, width: MAP_W, height: MAP_H }), dots, labels);
    $("map-caption").textContent = "The collection under \u201c" + map.instruction + "\u201d: " + points.length +
      " of " + map.total + " documents" + (map.sampled ? " (a sample)" : "") + " on their first two principal " +
      "components, in " + map.clusters.length + " clusters, each named by its most frequent answer." +
      " Ringed points are the current hits.";
    $("legend").replaceChildren(...map.clusters.map((cluster) => {
      const item = element("li");
      const swatch = element("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.backgroundColor = colour(cluster.cluster);
      const answers = cluster.top_answers.map(([answer, count]) => answer + " (" + count + ")").join(", ");
      item.append(swatch, element("span", { class: "legend-label" }, cluster.label || "(no answers)"),
        element("span", { class: "hint" }, " \u2013 " + cluster.size + (cluster.size === 1 ? " document" : " documents") +
          (answers ? "; " + answers : "")));
      return item;
    }));
    markHitsOnMap();
  }

  function markHitsOnMap() {
    for (const dot of $("map").querySelectorAll("circle")) {
      const hit = state.lastHitIds.has(dot.getAttribute("data-id"));
      dot.classList.toggle("hit", hit);
      if (hit) dot.parentNode.append(dot); // drawn last, on top
    }
  }

  function truncate(text, length) {
    return text.length > length ? text.slice(0, length - 1) + "\u2026" : text;
  }

  // ------------------------------------------------------------------ wiring

  function start() {
    $("key").value = state.key;
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("key").value.trim();
      if (state.key) sessionStorage.setItem(KEY_STORAGE, state.key); else sessionStorage.removeItem(KEY_STORAGE);
      loadIndexes();
    });
    $("forget-key").addEventListener("click", () => {
      state.key = "";
      $("key").value = "";
      sessionStorage.removeItem(KEY_STORAGE);
      say("The key is forgotten.");
    });
    $("index").addEventListener("change", indexChanged);
    $("instruction-1").addEventListener("change", instructionsChanged);
    $("instruction-2").addEventListener("change", instructionsChanged);
    $("same-query").addEventListener("change", instructionsChanged);
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      search();
    });
    $("map-form").addEventListener("submit", (event) => {
      event.preventDefault();
      drawMap();
    });
    $("clear-filters").addEventListener("click", () => {
      state.selected.clear();
      renderFilters();
      loadFacets();
      if (state.searched) search();
      $("query-1").focus();
    });
    loadIndexes();
  }

  start();
})();
