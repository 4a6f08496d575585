"""The HTML report and the figure files, built from the corpus database alone."""
