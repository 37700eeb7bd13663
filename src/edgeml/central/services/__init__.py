"""What the routes of the central node do, below them: ``state`` (one running node), ``targets``
(which bundle a device should run), ``fleet`` (the fleet view and its gauges), ``telemetry``
(taking one batch in), ``policy`` (the retraining decision of a round), ``retraining`` (running
it; its status)."""
