"""Does an embedding follow its instruction? Scores for any instruction-conditioned embedder.

Task kinds, after the InBedder paper (Peng et al., ACL 2024, "Answer is All You Need"):

- triplets: under the record's instruction, is the anchor closer to the positive than to the
  negative? Success rate per aspect and their harmonic mean (an embedder that serves only one
  aspect scores near 0 on the other, which the harmonic mean does not forgive);
- STS: Spearman correlation between cosine similarity and gold similarity, per instruction and
  overall;
- clustering: k-means (k = number of gold labels) on the texts embedded under each aspect's
  instruction, scored with v-measure;
- robustness: a triplet or clustering task re-scored under correct, implicit and incorrect
  paraphrases of its instructions; a model that reads the instruction shows a positive gap;
- two-aspect sets: texts labelled on two independent aspects, each asked in 3+ wordings: triplet
  success and v-measure per aspect, their spread over the wordings, and how varied the model's
  answers are. Sets whose aspect kind no training data asks about (``HELD_OUT_KINDS``) give the
  leave-aspects-out score (``EvaluationReport.summary``).

Modules: ``tasks`` (records and tasks), ``metrics`` (scoring, ``evaluate``), ``answers`` (answer
diversity, training-data report), ``datasets`` (files and hub loaders), ``suites`` (the bundled
sets), ``report`` (tables, chart), ``baseline`` (MiniLM). The names imported here are the API.
"""

from ..errors import DatasetNotAvailableError, EvaluationDataError
from .answers import AnswerStats, answer_stats, data_report
from .baseline import InstructionAgnostic, minilm_baseline
from .datasets import TASK_KINDS, load_task, save_task
from .metrics import (SUMMARY_GROUPS, AspectResult, ClusteringResult, EvaluationReport, RobustnessResult, STSResult,
                      TaskResult, TripletResult, TwoAspectResult, evaluate, evaluate_clustering, evaluate_robustness,
                      evaluate_sts, evaluate_triplets, evaluate_two_aspect)
from .report import (data_report_payload, format_data_report, format_evaluation, format_report, format_summary,
                     plot_report, report_payload)
from .suites import (FEEL_WANT_INSTRUCTIONS, FEEL_WANT_PARAPHRASES, SUITES, build_feel_want_triplets, builtin_eval_sets,
                     eval_tasks, feel_want_messages, suite_tasks, write_feel_want_sets)
from .tasks import (HELD_OUT_KINDS, KINDS, AspectQuestion, ClusteringRecord, ClusteringTask, InstructedEmbedder,
                    RobustnessTask, STSRecord, STSTask, Task, TripletRecord, TripletTask, TwoAspectTask, pair_triplets)

