"""The report layer: tables, figures and the summary, from arrays and tables in to files out (no result paths)."""
