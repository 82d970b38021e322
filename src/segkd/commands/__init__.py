"""One module per ``segkd`` sub-command; see :mod:`segkd.cli`."""
