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
