"""Board entry point: run the alert application from config.json."""

import alerts.app

alerts.app.main()
