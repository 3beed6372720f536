"""Graph clean-up shared by the float and INT8 exports."""

from __future__ import annotations


def short_names(model) -> None:
    """Rename inner tensors and nodes to short ids (t12, n7); graph inputs/outputs keep theirs.

    tf2onnx names carry the Keras layer path (~60 bytes each) and QDQ quantisation adds
    several long-named tensors and nodes per convolution: names were a third of a small
    INT8 file. Renames in place; a model with subgraphs is left as it is.
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

    for t in g.initializer:
        t.name = short(t.name)
    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for v in g.value_info:
        v.name = short(v.name)
