"""Studies: a grid of runs x seeds trained and evaluated into one folder, aggregated into paper-style tables
with 95% confidence intervals and a check of the papers' claims (``invarlab study STUDY.yaml``)."""

from invarlab.study.spec import Claim, Study, StudyRun, StudyTable, load_study

__all__ = ["Claim", "Study", "StudyRun", "StudyTable", "load_study"]
