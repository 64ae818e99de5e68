class Node:
    def __init__(self, *, package, executable, name=None, namespace=None, parameters=None,
                 remappings=None, arguments=None, output="screen", **kw):
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.arguments = list(arguments or [])
        self.output = output
        self.extra = kw


class LifecycleNode(Node):
    pass
