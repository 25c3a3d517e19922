"""Networks: :class:`~xprop.nets.network.Network`, the one model every network is built on,
and the book's networks defined on it: :mod:`~xprop.nets.two_layer_net` (ch. 5),
:mod:`~xprop.nets.multi_layer_net` (ch. 6), :mod:`~xprop.nets.simple_conv_net` (ch. 7) and
:mod:`~xprop.nets.deep_conv_net` (ch. 8)."""
