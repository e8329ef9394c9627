"""Energy ESTIMATE from event counts and the device profile's per-event coefficients.

    E = synaptic_ops * E_syn + neuron_updates * E_neuron + spikes * E_spike      [pJ]

The coefficients and their source live in devices/NAME.toml ([energy]). For loihi2 they
are Loihi 1 silicon figures (Davies et al. 2018): this is an estimate, not a measurement,
and every output says so.
"""

from __future__ import annotations

from edgekit.neuro.device import NeuroDevice


def estimate(counters: dict, dev: NeuroDevice) -> dict:
    e = dev.energy
    if not e:
        return {"label": "estimate unavailable: the device profile has no [energy] table"}
    syn = counters["synaptic_ops"] * float(e["synaptic_op_pj"])
    neu = counters["neuron_updates"] * float(e["neuron_update_pj"])
    spk = counters["total_spikes"] * float(e["spike_pj"])
    total = syn + neu + spk
    batch = max(int(counters.get("batch", 1)), 1)
    return {"label": "ESTIMATE (per-event coefficients from the device profile, not measured)",
            "source": e.get("source", dev.path),
            "coefficients_pj": {k: float(e[k]) for k in
                                ("synaptic_op_pj", "neuron_update_pj", "spike_pj")},
            "synaptic_pj": syn, "neuron_pj": neu, "spike_pj": spk, "total_pj": total,
            "per_stream_nj": total / batch / 1e3}
