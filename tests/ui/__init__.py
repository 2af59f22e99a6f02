"""`dip ui`: the HTTP API and the page in headless Chromium."""
