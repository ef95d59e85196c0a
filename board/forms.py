"""Forms for tickets and the board: every write goes through the ticket services, whose refusals become form errors."""

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from phases.models import Phase, Workflow

from .errors import Refused
from .models import Priority, Ticket
from .selectors import BoardFilters
from .services import ticket_create, ticket_transition, ticket_update

EDITABLE_FIELDS = ("title", "description", "priority", "is_blocked", "blocked_reason")


def add_refusal(form, exc):
    """Show a service's refusal on `form`: invalid values on their fields, a refusal of the whole change on the form.

    The one translation of service errors for pages and forms (the API has its
    own, in `board.api.errors`).
    """
    if isinstance(exc, Refused):
        form.add_error(None, str(exc))
        return
    for field, errors in exc.update_error_dict({}).items():
        form.add_error(field if field in form.fields else None, errors)


class ServiceForm(forms.ModelForm):
    """A ModelForm whose validation ends by calling a service, which validates and writes.

    The services are the one copy of the ticket rules, so the model's own checks
    are not run, and the service runs last, when nothing after it can fail. The
    admin sets `actor`, the user the services record.
    """

    actor = None

    def _post_clean(self):
        if self.errors:
            return
        try:
            self.instance = self.call_service(self.cleaned_data)
        except (Refused, ValidationError) as exc:
            add_refusal(self, exc)

    def call_service(self, data):
        raise NotImplementedError


class TicketAddForm(ServiceForm):
    class Meta:
        model = Ticket
        fields = ("board", "title", "description", "priority", "phase")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["phase"].required = False
        self.fields["phase"].help_text = "Empty: the first phase of the board's workflow."
        self.fields["phase"].queryset = Phase.objects.select_related("workflow").order_by(
            "workflow__name", "sequence_order", "key"
        )

    def call_service(self, data):
        return ticket_create(
            board=data["board"],
            title=data["title"],
            description=data["description"],
            priority=data["priority"],
            phase=data["phase"],
            actor=self.actor,
        )


class TicketChangeForm(ServiceForm):
    move_to_phase = forms.ModelChoiceField(
        queryset=Phase.objects.none(),
        required=False,
        label="Move to phase",
        help_text="Moves follow the workflow's transitions unless forced.",
    )
    transition_reason = forms.CharField(
        required=False, label="Reason", widget=forms.Textarea(attrs={"rows": 2}), help_text="Required when forcing."
    )
    force = forms.BooleanField(
        required=False,
        label="Force (staff override)",
        help_text="Move even where the workflow has no such transition; recorded as an override.",
    )

    class Meta:
        model = Ticket
        fields = EDITABLE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ticket = self.instance
        self.fields["move_to_phase"].queryset = (
            Phase.objects.filter(workflow_id=ticket.board.workflow_id).exclude(pk=ticket.phase_id).in_order()
        )

    def call_service(self, data):
        # Both or neither: a refused move must not leave the edit half-saved.
        with transaction.atomic():
            ticket = ticket_update(
                ticket=self.instance, actor=self.actor, **{name: data[name] for name in EDITABLE_FIELDS if name in data}
            )
            if data.get("move_to_phase"):
                ticket = ticket_transition(
                    ticket=ticket,
                    to_phase=data["move_to_phase"],
                    actor=self.actor,
                    reason=data.get("transition_reason", ""),
                    force=data.get("force", False),
                )
        return ticket


MARKDOWN_HINT = "Markdown: **bold**, _italic_, `code`, lists, links, tables. Raw HTML is removed."


class TicketCreateForm(ServiceForm):
    """Create a ticket on the board page's board, in one of its workflow's phases."""

    class Meta:
        model = Ticket
        fields = ("title", "description", "priority", "phase")
        widgets = {"description": forms.Textarea(attrs={"rows": 8})}
        help_texts = {"description": MARKDOWN_HINT}

    def __init__(self, *args, board, **kwargs):
        self.board = board
        super().__init__(*args, **kwargs)
        self.fields["phase"].required = False
        self.fields["phase"].empty_label = "First phase of the workflow"
        self.fields["phase"].queryset = Phase.objects.filter(workflow_id=board.workflow_id).in_order()

    def call_service(self, data):
        return ticket_create(
            board=self.board,
            title=data["title"],
            description=data["description"],
            priority=data["priority"],
            phase=data["phase"],
            actor=self.actor,
        )


class TicketEditForm(ServiceForm):
    class Meta:
        model = Ticket
        fields = EDITABLE_FIELDS
        widgets = {
            "description": forms.Textarea(attrs={"rows": 8}),
            "blocked_reason": forms.Textarea(attrs={"rows": 2}),
        }
        help_texts = {"description": MARKDOWN_HINT, "blocked_reason": "Shown on the card; needed when blocked."}

    def call_service(self, data):
        return ticket_update(ticket=self.instance, actor=self.actor, **{name: data[name] for name in EDITABLE_FIELDS})


class BoardFilterForm(forms.Form):
    """The board's filters, read from the query string so that a filtered board can be shared."""

    priority = forms.ChoiceField(choices=[("", "Any"), *Priority.choices], required=False)
    phase = forms.ChoiceField(required=False)
    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        strip=True,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Title, text or #id", "autocomplete": "off"}),
    )
    # Blocked means what the Blocked column means too: flagged as blocked, or parked in a holding phase.
    blocked = forms.BooleanField(required=False, label="Blocked")
    lanes = forms.ChoiceField(choices=[("", "None"), ("priority", "By priority")], required=False, label="Swimlanes")

    def __init__(self, data, *, phases):
        super().__init__(data)
        # Choices from the phases the page has already loaded, so the form costs no query.
        self.phases = {p.key: p for p in phases}
        self.fields["phase"].choices = [("", "Any"), *((p.key, p.name) for p in phases)]
        self.holding = tuple(p.pk for p in phases if p.is_holding)

    def filters(self):
        """The filters that are valid; an invalid one is ignored (and reported by the form)."""
        data = self.cleaned_data if self.is_bound else {}
        return BoardFilters(
            priority=data.get("priority") or "",
            phase=self.phases.get(data.get("phase") or ""),
            text=data.get("q") or "",
            blocked=bool(data.get("blocked")),
            lanes=data.get("lanes") == "priority",
            holding=self.holding,
        )


class MoveForm(forms.Form):
    """A drop, or a choice from a card's menu: the target column and/or phase and the neighbours, or a step up or down.

    `phase` names a phase of a column that shows several (a drop on its band,
    or "Move to phase"); without `column`, the column is the one showing it.
    """

    column = forms.SlugField(max_length=64, required=False)
    phase = forms.CharField(max_length=64, required=False)
    previous = forms.IntegerField(required=False, min_value=1, max_value=2**53)
    next = forms.IntegerField(required=False, min_value=1, max_value=2**53)
    direction = forms.ChoiceField(choices=[("up", "Up"), ("down", "Down")], required=False)
    reason = forms.CharField(required=False, max_length=2000)
    force = forms.BooleanField(required=False)

    def clean(self):
        data = super().clean()
        if not self.errors and not (data.get("column") or data.get("phase") or data.get("direction")):
            raise ValidationError("Say which column or phase to move the ticket to, or move it up or down.")
        return data


class ResultReviewForm(forms.Form):
    """A staff review of a ticket's result: accept or reject it, with a note (the service wants one to reject)."""

    decision = forms.ChoiceField(choices=[("accept", "Accept"), ("reject", "Reject")])
    note = forms.CharField(required=False, max_length=20000, widget=forms.Textarea(attrs={"rows": 2}))


COMMENT_MAX = 20_000


class CommentForm(forms.Form):
    """A comment on a ticket, in Markdown; `ticket_comment` checks it again and writes it."""

    body = forms.CharField(
        label="Comment",
        max_length=COMMENT_MAX,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=MARKDOWN_HINT,
        error_messages={
            "required": "Write something before posting.",
            "max_length": "At most %(limit_value)s characters (this has %(show_value)s).",
        },
    )


class PhaseChangeForm(forms.Form):
    """A phase change from the ticket page. Any other phase of the workflow may be asked for:
    `ticket_transition` judges it, and its refusal (not allowed, WIP full, forcing) is the form's error."""

    to_phase = forms.ModelChoiceField(
        queryset=Phase.objects.none(),
        label="Move to",
        error_messages={
            "required": "Choose the phase to move the ticket to.",
            "invalid_choice": "That phase is not one this ticket can be moved to; choose one from the list.",
        },
    )
    reason = forms.CharField(required=False, max_length=2000, label="Reason", widget=forms.Textarea(attrs={"rows": 2}))
    force = forms.BooleanField(required=False, label="Force it (staff override; needs a reason)")

    def __init__(self, *args, ticket, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["to_phase"].queryset = Phase.objects.filter(workflow_id=ticket.board.workflow_id).exclude(
            pk=ticket.phase_id
        )


# Boards and their members. These forms only read and check what was sent; the views call the
# board services, whose refusals come back on the form through `add_refusal`.


class BoardCreateForm(forms.Form):
    """A new board: its name, its workflow, and an address made from the name unless one is given."""

    name = forms.CharField(max_length=200, label="Name", help_text="What the team calls the board.")
    workflow = forms.ModelChoiceField(
        queryset=Workflow.objects.order_by("name"),
        label="Workflow",
        empty_label=None,
        help_text="The phases and columns its tickets move through.",
        error_messages={"invalid_choice": "That workflow is not installed; choose one from the list."},
    )
    slug = forms.SlugField(
        max_length=100,
        required=False,
        label="Address",
        help_text="Letters, digits and hyphens, used in the board's links. Leave empty to make one from the name.",
    )


class MemberAddForm(forms.Form):
    """Someone to put on a board, named by username, and whether they manage its members too."""

    username = forms.CharField(max_length=150, label="Username")
    owner = forms.BooleanField(required=False, label="Owner: may manage the board's members")

    def clean_username(self):
        name = self.cleaned_data["username"].strip()
        users = get_user_model().objects.filter(is_active=True)
        # The exact name first; otherwise a name that differs only in case, when it names one user.
        user = users.filter(username=name).first()
        if user is None:
            close = list(users.filter(username__iexact=name)[:2])
            user = close[0] if len(close) == 1 else None
        if user is None:
            shown = name if len(name) <= 64 else name[:63] + "…"
            raise ValidationError(f"No active user is called “{shown}”. Check the spelling of the username.")
        self.user = user
        return user.get_username()


class MemberRoleForm(forms.Form):
    """A member's role on a board: owner, or plain member."""

    role = forms.ChoiceField(choices=[("owner", "Owner"), ("member", "Member")])
