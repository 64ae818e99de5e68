class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description="", choices=None, **kw):
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


class OpaqueFunction:
    def __init__(self, *, function, args=None, kwargs=None, **kw):
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})
