"""The one exception converters raise: its message is a single line naming the file and problem."""


class ConversionError(Exception):
    pass
