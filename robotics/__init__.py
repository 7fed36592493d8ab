"""flowzoo.robotics: domain package (see the issues for what it will hold)."""

__all__: list[str] = []
