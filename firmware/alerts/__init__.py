"""The alerting application: configuration, sensors, rules, durable outbox, network, main loop.

Modules import only what they need, late where a module is heavy, because a board has
100 to 200 KB of heap. ``alerts.app.main()`` is the entry point that ``main.py`` calls.
"""
