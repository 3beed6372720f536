"""Graph clean-up shared by the float and INT8 exports."""

from __future__ import annotations


def short_names(model) -> None:
    """Rename inner tensors and nodes to short ids (t12, n7); graph inputs/outputs keep theirs.

    tf2onnx names carry the Keras layer path (~60 bytes each) and QDQ quantisation adds
    several long-named tensors and nodes per convolution: names were a third of a small
    INT8 file. Tensors are numbered in order of first use by the nodes and the initializers
    sorted by that number: tf2onnx lists initializers in an order that changes from run to
    run, and the same model must give the same file (and graph hash) every time. Renames in
    place; a model with subgraphs is left as it is.
    """
    import onnx

    g = model.graph
    graph_attrs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if any(a.type in graph_attrs for node in g.node for a in node.attribute):
        return  # subgraphs may refer to outer names: leave such a model as converted
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    names = {}

    def short(name):
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for t in sorted(g.initializer, key=lambda t: t.name):  # unused ones last, by their old name
        t.name = short(t.name)
    _sort_by_id(g.initializer)
    for v in g.value_info:
        v.name = short(v.name)
    _sort_by_id(g.value_info)


def _sort_by_id(items) -> None:
    """Order a repeated field of renamed protos by their number (t3 before t12; kept names last)."""
    def key(x):
        return (0, int(x.name[1:])) if x.name[:1] == "t" and x.name[1:].isdigit() else (1, x.name)

    ordered = sorted(items, key=key)
    copies = [type(x)() for x in ordered]
    for c, x in zip(copies, ordered):
        c.CopyFrom(x)
    del items[:]
    items.extend(copies)


def _scalar(init: dict, name: str):
    """The value of a one-element constant initializer, or None."""
    from onnx import numpy_helper

    t = init.get(name)
    if t is None:
        return None
    a = numpy_helper.to_array(t)
    return float(a.ravel()[0]) if a.size == 1 else None


def _hard_sigmoid_at(mul6, init: dict, producer: dict, consumers: dict):
    """(x, [Add, Clip, Mul]) when ``mul6`` ends ``Mul(Clip(Add(x, 3), 0, 6), 1/6)``, else None."""
    if mul6.op_type != "Mul" or _scalar(init, mul6.input[1]) is None or abs(_scalar(init, mul6.input[1]) - 1 / 6) > 1e-6:
        return None
    clip = producer.get(mul6.input[0])
    if clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
        return None
    if (_scalar(init, clip.input[1]), _scalar(init, clip.input[2])) != (0.0, 6.0):
        return None
    add = producer.get(clip.input[0])
    if add is None or add.op_type != "Add" or _scalar(init, add.input[1]) != 3.0:
        return None
    if len(consumers[add.output[0]]) != 1 or len(consumers[clip.output[0]]) != 1:
        return None
    return add.input[0], [add, clip, mul6]


def fuse_hard_activations(model) -> dict:
    """Replace Keras' hard-sigmoid / hard-swish subgraphs by ONNX HardSigmoid / HardSwish (opset 14+).

    Keras writes ``hard_sigmoid(x) = relu6(x + 3) / 6`` and ``hard_swish(x) = x * hard_sigmoid(x)``
    (MobileNetV3); tf2onnx keeps them as Add, Clip, Mul (, Mul) on every activation. onnxruntime
    cannot keep those in its blocked NCHWc layout, so each one cost four passes over the tensor
    plus two layout reorders; as single ops it fuses them into the preceding convolution, which is
    what brought onnxruntime on MobileNetV3-Small level with TFLite at one thread (the figures:
    docs/performance.md, section 4). Exact: the same arithmetic. Rewrites in place.

    Returns
    -------
    dict
        ``{"HardSigmoid": n, "HardSwish": n}`` nodes written.
    """
    from onnx import helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    replace, drop, counts = {}, set(), {"HardSigmoid": 0, "HardSwish": 0}
    for node in g.node:
        found = _hard_sigmoid_at(node, init, producer, consumers)
        if found is None:
            continue
        x, parts = found
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Mul" and sorted(users[0].input) == sorted([x, node.output[0]]):
            mul = users[0]
            replace[id(mul)] = helper.make_node("HardSwish", [x], list(mul.output), name=f"{mul.name}_hswish")
            drop |= {id(p) for p in parts}
            counts["HardSwish"] += 1
        else:
            replace[id(node)] = helper.make_node("HardSigmoid", [x], list(node.output), alpha=1 / 6, beta=0.5,
                                                 name=f"{node.name}_hsig")
            drop |= {id(p) for p in parts[:2]}
            counts["HardSigmoid"] += 1
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    unused = [t for t in g.initializer if t.name not in used]  # the constants 3, 0, 6 and 1/6
    for t in unused:
        g.initializer.remove(t)
    return counts
