"""Layers and functions: the nodes of the computational graph (ch. 3-8).

:mod:`~xprop.nn.layers` holds the book's chapter-5 layers, :mod:`~xprop.nn.batch_norm` and
:mod:`~xprop.nn.dropout` the chapter-6 ones, :mod:`~xprop.nn.conv` and
:mod:`~xprop.nn.pooling` the chapter-7 ones (on :mod:`~xprop.nn.im2col`),
:mod:`~xprop.nn.functions` the activation and loss functions; :mod:`~xprop.nn.layer` the
base class they share (a layer used alone checks its input; inside a network the network
does, once).
"""
