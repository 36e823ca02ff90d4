"""HTML reports and their figures: the page every stage adds a section to (page), the summary card (card),
the fold-train sections (sections) and the task-specific figures (task_figures). Reads artifacts, writes
experiments/<exp>/report.html and its PNGs.
"""

__all__ = ["card", "page", "sections", "task_figures"]
