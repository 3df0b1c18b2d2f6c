"""Routing: model aliases (``auto``) resolved per request to the cheapest model that will do.

``stage.py`` is the ``route`` pipeline stage; one module per router (``heuristic``, ``classifier``,
``trained_router`` over ``trained``'s model, ``rules``), ``experiments`` splits traffic between
variants, ``settings`` is their config. See docs/routing.md.
"""
