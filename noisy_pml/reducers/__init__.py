"""reducers."""
