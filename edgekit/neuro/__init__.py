"""edgekit.neuro: LIF spiking networks -> Loihi-style fixed point, simulated bit-exactly.

Pipeline (DESIGN.md): NIR file / snnTorch / edgekit torch LIF modules -> ``SNNGraph``
(declarative, ``graph.py``) -> named passes ``discretize(dt)`` -> ``quantize(device)`` ->
``map(device)`` (``passes.py``) -> ``CompiledNetwork`` (npz + json, ``compiled.py``) ->
``Simulator`` (numpy, bit-exact with Lava fixed_pt, ``sim.py``) | Lava (``lava_bridge.py``
-> ``_lava_worker.py`` in the Python 3.10 side environment).

Dimension legend (used in shape comments throughout this package)
-----------------------------------------------------------------
B        batch: independent input streams simulated together
T        time steps
S        samples run back to back through Lava (each from rest)
n_in     network inputs (spike sources)
N, n     neurons of one population; n_src / n_dst: source / destination of a connection
W        weights (n_dst, n_src): rows are postsynaptic neurons, as in NIR and Lava
u, v     LIF synaptic current and membrane voltage, per neuron
du, dv   Loihi 12-bit decay constants (0..4095); vth 17-bit threshold mantissa

Units: time in seconds; in fixed point u, v, thresholds and biases are integers in
Loihi's "v units" (the threshold is vth << 6); the float twin uses the same units as the
source graph after discretization (see ``passes.discretize``).

Every file read (NIR, saved SNN, compiled network) is untrusted: ``untrusted.py`` checks
each array's declared size before reading it, and the loaders check every key and range.

Importing this package does not import torch; ``edgekit.neuro.torch_lif`` and the demo do.
"""
