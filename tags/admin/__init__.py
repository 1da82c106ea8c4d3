"""The tags admin: definitions (``definitions``), values, history and jobs (``values``), and the
subject page's tags panel and bulk action (``subject_panel``, used by ``subjects.admin``).
"""

from . import definitions, values  # noqa: F401  (registers the ModelAdmins)
