"""execworker: the execution layer of a crypto trading stack, as an event-sourced Kafka worker.

Layers, bottom to top (a module imports only from layers below it):
contract -> codec -> policy -> execution -> io -> runtime -> cli.
"""

__version__ = "0.1.0"
