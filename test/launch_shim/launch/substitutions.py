class LaunchConfiguration:
    def __init__(self, variable_name, default=None):
        self.variable_name, self.default = variable_name, default

    def perform(self, context):
        return context.launch_configurations[self.variable_name]


class TextSubstitution:
    def __init__(self, text):
        self.text = text


class PathJoinSubstitution:
    def __init__(self, substitutions):
        self.substitutions = list(substitutions)
