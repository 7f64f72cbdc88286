"""The demo: a fake shop served over real HTTP, and the checkout that calls it."""
