"""Networks: :class:`~xprop.nets.network.Network`, the one model every network is built on,
and the book's networks defined on it (:mod:`~xprop.nets.two_layer_net`,
:mod:`~xprop.nets.multi_layer_net`)."""
