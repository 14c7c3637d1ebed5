"""How the relay is served over HTTP: uvicorn's options, and bounds on each request's head
(`head`) and body (`body`) that keep slow or huge requests from holding the process."""
