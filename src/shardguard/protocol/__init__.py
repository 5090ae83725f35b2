"""What crosses the network between a coordinator and its workers: the data-plane wire format
(``wire.py``) and the typed control messages (``control.py``).

Light on purpose (numpy and msgpack only): a board that runs workers without torch
imports it, and so do the threats that act on messages in transit.
"""
