"""The orchestrator's board steps: each does one bounded pass of one duty and returns "more work right now?".

A step is a function `step(*, now, batch) -> bool`: `now` is the clock (tests
pass a fixed one), `batch` the most rows it handles in one call. Steps change
nothing themselves: they find candidates and call the services, which guard
every update on the expected prior state, so several orchestrators running
the same step at once never do a piece of work twice. `omoi_site.orchestrator`
runs them in a loop.
"""
