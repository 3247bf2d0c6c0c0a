"""llmops: the whole life of a language model, wired together by Apache Airflow.

The core library never imports airflow; every stage is usable from Python and
from the ``llmops`` command line.
"""

__version__ = "0.1.0"
