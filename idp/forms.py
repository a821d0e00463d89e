"""What is wrong with a sent form, field by field (WCAG 2.1 3.3.1, 3.3.3, 1.3.1, 4.1.2).

A view that refuses a form hands the template a :class:`FormErrors`: the message for each field
in error (in the order the fields appear on the page), and, where a message is about the form as
a whole, that message and the fields it concerns. The ``field`` macro ties each message to its own
input only (``aria-invalid``, ``aria-describedby``); the ``error_summary`` macro lists them at the
top with links to the fields; ``base.html`` starts the title with "Error: "; the first field in
error gets ``autofocus``.

A failed login is a message about the form that marks both fields: it must not say which of
address and password was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORM_MESSAGE_ID = "form-error"


@dataclass
class FormErrors:
    fields: dict[str, str] = field(default_factory=dict)  # field name -> message, in page order
    form: str | None = None  # a message about the form as a whole
    marked: tuple[str, ...] = ()  # fields the form message concerns (marked invalid, tied to it)

    def __bool__(self) -> bool:
        return bool(self.fields or self.form)

    def add(self, name: str, message: str) -> FormErrors:
        self.fields.setdefault(name, message)
        return self

    @property
    def first(self) -> str | None:
        """The field that gets the focus: the first one in error."""
        names = [*self.fields, *self.marked]
        return names[0] if names else None

    def invalid(self, name: str) -> bool:
        return name in self.fields or name in self.marked

    def message(self, name: str) -> str | None:
        return self.fields.get(name)

    def described_by(self, name: str) -> list[str]:
        """The ids of the messages about this field (its own, and the form's if it concerns it)."""
        ids = [f"{name}-error"] if name in self.fields else []
        if self.form and name in self.marked:
            ids.append(FORM_MESSAGE_ID)
        return ids


def field_error(name: str, message: str) -> FormErrors:
    return FormErrors({name: message})


def form_error(message: str, *marked: str) -> FormErrors:
    return FormErrors(form=message, marked=marked)
