"""``omnivis serve``: trained bundles behind one HTTP server (FastAPI + uvicorn).

The data flow is ``uploads`` (bytes -> a checked PIL image) -> ``batching`` (concurrent requests ->
one model call) -> ``models`` (a bundle's predictor, the same code ``omnivis predict`` runs) ->
the endpoint families in ``routes_*`` (omnivis JSON, OpenAI Images, KServe v2), each with its own
error format (``api_errors``); ``app`` puts them together with limits, metrics and the web page.
"""
