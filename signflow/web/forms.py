"""Flask-WTF forms: every state-changing form carries a CSRF token."""

from __future__ import annotations

from typing import TypeVar

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    FloatField,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp

from signflow.core.accounts.identity import MAX_DISPLAY_NAME
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_, URGENCY_LABELS, label
from signflow.core.requests.events import EVENT_TYPES
from signflow.core.requests.workflow import MAX_NOTE, MAX_REASON
from signflow.models import Role, Urgency

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# A bare confirmation button has no field to get wrong: failing, its CSRF token expired.
FORM_EXPIRED = N_("The form expired. Reload the page.")

FormT = TypeVar("FormT", bound=FlaskForm)

# Around the October clock change 02:00-03:00 happens twice: which one is meant.
FOLD_CHOICES = [("", _l("ask me")), ("0", _l("the first occurrence (summer time)")),
                ("1", _l("the second occurrence (winter time)"))]
ROLE_CHOICES = [(Role.TECHNICIAN.value, _l("Technician")), (Role.PHYSICIAN.value, _l("Physician")),
                (Role.RECIPIENT.value, _l("Recipient")), (Role.AUDITOR.value, _l("Auditor")),
                (Role.ADMIN.value, _l("Admin")), (Role.INTEGRATION.value, _l("Integration"))]
RUNG_CHOICES = [(0, _l("Primary")), (1, _l("Backup"))]


def fold_of(field: SelectField) -> int | None:
    """The occurrence chosen in a FOLD_CHOICES field (None: ask)."""
    return int(field.data) if field.data in ("0", "1") else None


def form_error(form: FlaskForm) -> InvalidInput:
    """The refusal of a form that did not validate, naming each field at fault."""
    problems = "; ".join(f"{getattr(form, k).label.text}: {v[0]}" for k, v in form.errors.items())
    return InvalidInput(N_("Check the form: %(problems)s"), params={"problems": problems})


def submitted(form: FormT, refusal: str | None = None) -> FormT:
    """`form`, posted and valid; otherwise the one refusal for a bad form (InvalidInput,
    mapped to 4xx with nothing changed): `refusal` if given, else the fields' errors."""
    if form.validate_on_submit():
        return form
    raise InvalidInput(refusal) if refusal is not None else form_error(form)


class LoginForm(FlaskForm):
    username = StringField(_l("User name"), validators=[DataRequired(), Length(max=80)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])
    # Shown only when the hospital directory is configured (web/auth.py: login).
    source = RadioField(_l("Account"), choices=[("directory", _l("Hospital account")),
                                                 ("local", _l("signflow account"))],
                        default="directory", validate_choice=False)


class CodeForm(FlaskForm):
    code = StringField(_l("6-digit code from your authenticator app"),
                       validators=[DataRequired(),
                                   Regexp(r"^\s*\d{3}\s?\d{3}\s*$", message=_l("Six digits."))])


class ConfirmForm(FlaskForm):
    """A button: logout, cancel, acknowledge..."""


class PushCodeForm(FlaskForm):
    """The code the first push to a device showed."""

    code = StringField(_l("Code shown on the phone"),
                       validators=[DataRequired(), Length(min=6, max=12)])


class UploadForm(FlaskForm):
    document = FileField(_l("PDF document"), validators=[FileRequired("Choose a PDF file.")])
    title = StringField(_l("Title"), validators=[Optional(), Length(max=200)])
    group = SelectField(_l("On-call group that must sign"), coerce=int, validators=[DataRequired()])
    then_group = SelectField(_l("Then also signed by (optional)"), coerce=int, validators=[Optional()])
    destination = SelectField(_l("Deliver to"), coerce=int, validators=[DataRequired()])
    urgency = SelectField(
        _l("Urgency"),
        choices=[(Urgency.EMERGENCY.value, _l("Emergency (5 min)")),
                 (Urgency.URGENT.value, _l("Urgent (10 min)")),
                 (Urgency.ROUTINE.value, _l("Routine (1 h)"))],
        default=Urgency.URGENT.value,
    )
    note = TextAreaField(_l("Note for the physician (optional)"),
                         validators=[Optional(), Length(max=MAX_NOTE)])
    stamp_position = HiddenField(
        validators=[Optional(), Regexp(r"^\d{1,4}(,\d{1,5}(\.\d+)?){4}$")]
    )


class SignForm(FlaskForm):
    pin = PasswordField(_l("Signing PIN"), validators=[DataRequired(), Length(min=4, max=64)])
    activation = HiddenField(validators=[DataRequired(), Length(max=600)])
    document_sha256 = HiddenField(validators=[DataRequired(), Regexp(r"^[0-9a-f]{64}$")])
    # Step-up (core.accounts.step_up): a fresh second factor, asked for on this very form
    # when the last one is too old: a TOTP code, or a passkey's answer (filled by passkeys.js).
    step_up_code = StringField(_l("6-digit code from your authenticator app"), validators=[
        Optional(), Regexp(r"^\s*\d{3}\s?\d{3}\s*$", message=_l("Six digits."))])
    step_up_passkey = HiddenField(validators=[Optional(), Length(max=16000)])


class RecoveryCodeForm(FlaskForm):
    code = StringField(_l("Recovery code"), validators=[DataRequired(), Length(min=8, max=40)])


class PasskeyForm(FlaskForm):
    """The name of a new passkey (the browser's answer comes as JSON with it)."""

    name = StringField(_l("Name of this passkey"), validators=[DataRequired(), Length(max=80)])


class DeclineForm(FlaskForm):
    reason = TextAreaField(_l("Reason"),
                           validators=[DataRequired(_l("Say why you decline.")), Length(max=MAX_REASON)])


class PinForm(FlaskForm):
    enrolment_code = StringField(_l("Enrolment code (sent to your e-mail or phone)"),
                                 validators=[Optional(), Length(max=20)])
    current_pin = PasswordField(_l("Current signing PIN"), validators=[Optional(), Length(max=64)])
    pin = PasswordField(_l("New signing PIN"), validators=[DataRequired(), Length(min=6, max=64)])
    confirm = PasswordField(_l("New signing PIN again"), validators=[DataRequired(), Length(max=64)])


class UnblockForm(FlaskForm):
    puk = PasswordField(_l("Unblock code"), validators=[DataRequired(), Length(max=64)])
    pin = PasswordField(_l("New signing PIN"), validators=[DataRequired(), Length(min=6, max=64)])
    confirm = PasswordField(_l("New signing PIN again"), validators=[DataRequired(), Length(max=64)])


class UserEditForm(FlaskForm):
    """What an administrator may change on an existing user."""

    display_name = StringField(_l("Full name"), validators=[DataRequired(), Length(max=MAX_DISPLAY_NAME)])
    email = StringField(_l("E-mail"), validators=[Optional(),
                                                  Regexp(EMAIL, message=_l("Not an e-mail address.")),
                                              Length(max=320)])
    phone = StringField(_l("Phone (optional)"), validators=[Optional(), Length(max=40)])
    professional_id = StringField(_l("Professional ID (RPPS 11 digits or ADELI 9 digits)"),
                                  validators=[Optional(), Length(max=40)])
    destination = SelectField(_l("Destination service (recipients)"), coerce=int, validators=[Optional()])


class UserForm(UserEditForm):
    """A new user: the editable fields plus those fixed at creation (the templates place
    each field by name, so the inherited order does not matter)."""

    username = StringField(_l("User name"), validators=[DataRequired(), Length(max=80)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES)
    password = PasswordField(_l("Initial password"), validators=[DataRequired(), Length(min=8, max=256)])


class PasswordForm(FlaskForm):
    current = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=256)])
    password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=256)])
    confirm = PasswordField(_l("New password again"), validators=[DataRequired(), Length(max=256)])


class RevokeForm(FlaskForm):
    reason = SelectField(_l("Reason"), choices=[("key_compromise", _l("Key compromise")),
                                            ("affiliation_changed", _l("Left the hospital")),
                                            ("superseded", _l("Superseded")),
                                            ("cessation_of_operation", _l("No longer signs"))])
    confirm = BooleanField(_l("I confirm"), validators=[DataRequired()])


class DelegateForm(FlaskForm):
    # Checked in core against who is on call at the moment of the POST.
    to = SelectField(_l("Delegate to"), coerce=int, validators=[DataRequired()], validate_choice=False)


class StampForm(FlaskForm):
    page = IntegerField(validators=[DataRequired(), NumberRange(min=1, max=10000)])
    fx = FloatField(validators=[InputRequired(), NumberRange(min=0, max=1)])
    fy = FloatField(validators=[InputRequired(), NumberRange(min=0, max=1)])


class GroupForm(FlaskForm):
    name = StringField(_l("Group name"), validators=[DataRequired(), Length(max=200)])
    head = SelectField(_l("Head of department (last escalation)"), coerce=int, validators=[Optional()])


class DestinationForm(FlaskForm):
    name = StringField(_l("Destination service"), validators=[DataRequired(), Length(max=200)])
    email = StringField(_l("Service e-mail (optional)"), validators=[
        Optional(), Regexp(EMAIL, message=_l("Not an e-mail address.")),
        Length(max=320)])


class ShiftForm(FlaskForm):
    group = SelectField(_l("Group"), coerce=int, validators=[DataRequired()])
    physician = SelectField(_l("Physician"), coerce=int, validators=[DataRequired()])
    level = SelectField(_l("Rung"), coerce=int, choices=RUNG_CHOICES)
    starts_at = DateTimeLocalField(_l("Starts (local time)"), format="%Y-%m-%dT%H:%M",
                                   validators=[DataRequired()])
    ends_at = DateTimeLocalField(_l("Ends (local time)"), format="%Y-%m-%dT%H:%M",
                                 validators=[DataRequired()])
    fold = SelectField(_l("If a time happens twice (the October clock change)"),
                       choices=FOLD_CHOICES, default="")


class PolicyForm(FlaskForm):
    group = SelectField(_l("Group"), coerce=int, validators=[DataRequired()])
    urgency = SelectField(_l("Urgency"),
                          choices=[(u.value, _l(label(URGENCY_LABELS, u.value))) for u in Urgency])
    rung_minutes = StringField(_l("Minutes at each rung (primary, backup, head), e.g. 5, 5, 10"),
                               validators=[DataRequired(), Length(max=100),
                                           Regexp(r"^\s*\d+(\s*,\s*\d+)*\s*$",
                                                  message=_l("Whole minutes separated by commas."))])
    repeat_after = IntegerField(_l("Page the same rung again after (minutes, empty: no repeat)"),
                                validators=[Optional(), NumberRange(min=1, max=1440)])

    def minutes(self) -> list[int]:
        return [int(m) for m in (self.rung_minutes.data or "").split(",")]


class RotaImportForm(FlaskForm):
    file = FileField(_l("Rota file (.csv or .ics)"), validators=[FileRequired(_l("Choose a file."))])
    group = SelectField(_l("Group (for an .ics calendar)"), coerce=int)
    level = SelectField(_l("Rung (for an .ics calendar)"), coerce=int, choices=RUNG_CHOICES)
    fold = SelectField(_l("If a time happens twice (the October clock change)"),
                       choices=FOLD_CHOICES, default="")


class AbsenceForm(FlaskForm):
    starts_at = DateTimeLocalField(_l("Away from (local time)"), format="%Y-%m-%dT%H:%M",
                                   validators=[DataRequired()])
    ends_at = DateTimeLocalField(_l("Back at (local time)"), format="%Y-%m-%dT%H:%M",
                                 validators=[DataRequired()])
    cover = SelectField(_l("Covered by"), coerce=int, validators=[DataRequired()])
    fold = SelectField(_l("If a time happens twice (the October clock change)"),
                       choices=FOLD_CHOICES, default="")


class AdminAbsenceForm(AbsenceForm):
    """An absence an administrator records for a physician (a sick call at night)."""

    physician = SelectField(_l("Physician who is away"), coerce=int, validators=[DataRequired()])


class ContactForm(FlaskForm):
    """A new contact channel; the address is parsed by the core (phone numbers in E.164)."""

    kind = SelectField(_l("Channel"), choices=[("email", _l("E-mail")), ("sms", _l("Mobile phone (SMS)")),
                                               ("pager", _l("Pager"))])
    address = StringField(_l("Address or number"), validators=[DataRequired(), Length(max=320)])


class ContactCodeForm(FlaskForm):
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=20)])


class SubscriptionForm(FlaskForm):
    """A webhook or FHIR subscription (web.webhooks fills `scope`'s choices)."""

    kind = SelectField(_l("Kind"), choices=[("webhook", _l("Webhook (Standard Webhooks)")),
                                            ("fhir", _l("FHIR server (transaction)"))])
    url = StringField(_l("Endpoint URL"), validators=[DataRequired(), Length(max=2000)])
    # "d:<id>" a destination service, "t:<id>" a sending account.
    scope = SelectField(_l("Requests of"), validators=[DataRequired()])
    events = SelectMultipleField(_l("Events"), choices=[(e, e) for e in EVENT_TYPES])


class LanguageForm(FlaskForm):
    """The interface language (empty: the site's)."""

    language = SelectField(_l("Language"), choices=[("", _l("The site's language")), ("fr", "Français"),
                                                    ("en", "English")],
                           validators=[Optional()])
