"""The worker: Faust agents that decode, aggregate and route what the gateway published."""
