"""Job functions, queue wiring, the scheduler and the connectors that act on the outside world."""
