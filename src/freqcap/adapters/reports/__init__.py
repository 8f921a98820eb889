"""Report files and plots (matplotlib) that people look at: curve plots, the evaluation report."""
