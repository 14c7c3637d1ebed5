"""The relay's HTTP routes: each translates HTTP to the parts below it and back.

`track` (the Create Event API) and `collect` (the browser's events) hand their events to
`relay.intake`; `snippet` and `demo` serve the browser's script and the demo page; `health`
answers operators and balancers; `debug` is the event debugger; `errors` turns a refusal into
an answer; `timing` times each request.
"""
