"""Who did something: a signed-in user, or nobody (the schedule, the command line, a test)."""


def real_user(user):
    """The user if it is a saved account, else None (AnonymousUser, None)."""
    return user if getattr(user, "pk", None) else None
