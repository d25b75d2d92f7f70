# Board entry point: run the alert application from config.json.
#
# When the firmware cannot be imported or started (a heap too small for it, for one),
# alerts.restart logs why and resets the board after a delay that grows with each
# failed start in a row. It is imported first, while the heap is empty, so that it
# fits. Ctrl-C (KeyboardInterrupt, not an Exception) still reaches the REPL. Comments,
# not a docstring: the board compiles this file at boot, and comments cost no heap.

import alerts.restart

# A reset by the watchdog counts as a failed start, with its delay before this start.
alerts.restart.after_watchdog()

try:
    import alerts.app

    alerts.app.main()
except Exception as exc:
    try:
        # alerts.app unloads alerts.restart once the sensor loop runs.
        import alerts.restart

        alerts.restart.failed(exc)
    except Exception:
        # alerts.restart did not fit again after it was unloaded, or failed itself:
        # reset after 10 s anyway rather than stop at the REPL.
        import time

        import machine

        print("ERROR the firmware failed to start; reset in 10 s")
        time.sleep(10)
        machine.reset()
