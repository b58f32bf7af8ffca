"""Integrations: report work that already shows its progress through tqdm or logging.

- `headway.contrib.tqdm`: `tqdm` and `trange` that report as they draw
  (`pip install 'headway[tqdm]'`).
- `headway.contrib.logging`: `HeadwayHandler`, which sends the records logged
  inside a task to that task's log.

Both fail open: whatever happens to the server, the job runs on (see
`_reporter.py`). `configure()` points them at a server other than the one the
environment names.
"""

from headway.contrib._reporter import Reporter, configure, default_reporter

__all__ = ["Reporter", "configure", "default_reporter"]
