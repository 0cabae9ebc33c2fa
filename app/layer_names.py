"""A model's layers as a student reads them, in the page's language.

The engine's ``layer.describe()`` ("Conv2D 16@3×3 pad 1") is for logs and the JSON API; a
page names each layer from its ``spec()`` instead: "Convolución 16@3×3, relleno 1",
"Pooling máx. 2×2", "ReLU", "Aplanar", "Densa 256→10".
"""

from __future__ import annotations

from typing import Any

from cnnlab.app import numbers
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _

LAYER_NAMES = {"Conv2D": N_("Convolution"), "Activation": N_("Activation"), "Pool2D": N_("Pooling"),
               "Flatten": N_("Flatten"), "Dense": N_("Dense")}
# One name per activation function, the same on every page.
ACTIVATION_NAMES = {"relu": N_("ReLU"), "sigmoid": N_("sigmoid"), "tanh": N_("tanh"), "leaky_relu": N_("leaky ReLU")}
POOL_KINDS = {"max": N_("max %(k)s×%(k)s"), "avg": N_("average %(k)s×%(k)s"), "global_avg": N_("global average")}


def activation_name(name: str) -> str:
    return _(ACTIVATION_NAMES.get(name, name))


def layer_detail(spec: dict[str, Any]) -> str:
    """What distinguishes this layer from others of its type: "16@3×3, padding 1", "max 2×2"."""
    kind = spec["type"]
    if kind == "Conv2D":
        parts = [f"{spec['F']}@{spec['k']}\u00d7{spec['k']}"]
        if spec.get("stride", 1) != 1:
            parts.append(_("stride %(s)s") % {"s": spec["stride"]})
        if spec.get("padding", 0) not in (0, "valid"):
            parts.append(_("padding %(p)s") % {"p": spec["padding"]})
        if spec.get("dilation", 1) != 1:
            parts.append(_("dilation %(d)s") % {"d": spec["dilation"]})
        return ", ".join(parts)
    if kind == "Pool2D":
        text = _(POOL_KINDS[spec["kind"]]) % {"k": spec["size"]}
        if spec["kind"] != "global_avg" and spec.get("stride") not in (None, spec["size"]):
            text += ", " + _("stride %(s)s") % {"s": spec["stride"]}
        return text
    if kind == "Activation":
        name = activation_name(spec["name"])
        return f"{name} \u03b1 = {numbers.num(spec['alpha'], 4)}" if "alpha" in spec else name
    if kind == "Dense":
        return f"{spec['D_in']}\u2192{spec['D_out']}"
    return ""


def layer_label(spec: dict[str, Any]) -> str:
    """The layer's name and detail: "Convolution 16@3×3, padding 1"; an activation is named
    by its function alone ("ReLU")."""
    if spec["type"] == "Activation":
        return layer_detail(spec)
    detail = layer_detail(spec)
    name = _(LAYER_NAMES.get(spec["type"], spec["type"]))
    return f"{name} {detail}" if detail else name
