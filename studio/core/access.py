"""Who may do what: the leads of a team, named when the app starts (`--leads`, or STUDIO_LEADS on a Space), edit
guidelines and rubrics, set targets, mark gold, run judges, import and export data, launch, stop and resume training,
merge, push and hand out API keys; everyone else ranks and votes. With no lead named there are no roles (one person
on a laptop, or a team that trusts itself).

Every engine function that changes state takes the acting user (`by`: the logged-in name, None without a login) and
calls check_lead itself, whoever calls it: a page, an HTTP route or a test. A command run at this machine's terminal
acts as its owner (TERMINAL).
"""

import os

LEADS_ENV = "STUDIO_LEADS"


class TeamError(ValueError):
    """Something a team member may not do, or a team setting that cannot be; the message says why."""


class _Terminal:
    """Whoever runs a command at this machine's terminal: they own the database, and pass every role check. Not a
    string, so that no login can be it."""

    def __repr__(self) -> str:
        return "the terminal"


TERMINAL = _Terminal()


def leads() -> set[str]:
    """The leads named at launch (STUDIO_LEADS: names separated by commas or spaces); empty: no roles."""
    return {name for name in os.environ.get(LEADS_ENV, "").replace(",", " ").split() if name}


def is_lead(user) -> bool:
    names = leads()
    if not names or user is TERMINAL:
        return True
    return isinstance(user, str) and (user in names or user.removeprefix("hf:") in names)


def check_lead(user, action: str) -> None:
    """Raise TeamError unless `user` (the logged-in name; None without a login) may `action`."""
    if is_lead(user):
        return
    names = ", ".join(sorted(leads()))
    if user is None:
        raise TeamError(f"Log in to {action}: only the leads ({names}) may.")
    raise TeamError(f"Only a lead may {action}; {user} ranks and votes. Ask a lead: {names}.")
