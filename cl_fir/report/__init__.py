"""Run results, run directories, summaries and cross-run comparison."""
