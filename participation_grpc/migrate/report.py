"""What a migrate run did (or, in a dry run, would do): the steps applied and the data repaired."""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_IDS = 5  # ids shown per kind; the count is always the full number


@dataclass
class Kind:
    """One kind of repair (or of finding left as it is), with every row it concerned."""

    label: str
    changed: bool
    ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = ", ".join(self.ids[:FIRST_IDS]) + (", ..." if len(self.ids) > FIRST_IDS else "")
        return f"  {self.label}: {len(self.ids)} (first: {shown})"


class MigrationError(Exception):
    """migrate stopped; the message is one line fit for the operator, and says what was kept."""


@dataclass
class Report:
    dry_run: bool = False
    applied: list[str] = field(default_factory=list)
    kinds: dict[str, Kind] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, label: str, ident: str, *, changed: bool = True) -> None:
        self.kinds.setdefault(label, Kind(label, changed)).ids.append(ident)

    @property
    def repaired(self) -> list[Kind]:
        return [k for k in self.kinds.values() if k.changed]

    @property
    def left_as_is(self) -> list[Kind]:
        return [k for k in self.kinds.values() if not k.changed]

    def count(self, label: str) -> int:
        kind = self.kinds.get(label)
        return len(kind.ids) if kind else 0

    def summary(self) -> str:
        verb = "would apply" if self.dry_run else "applied"
        lines = [f"{verb}: " + (", ".join(self.applied) or "nothing (up to date)")]
        if self.repaired:
            lines.append("would repair:" if self.dry_run else "repaired:")
            lines += [k.line() for k in self.repaired]
        else:
            lines.append("nothing to repair")
        if self.left_as_is:
            lines.append("found and left as they are:")
            lines += [k.line() for k in self.left_as_is]
        if self.dry_run:
            lines.append(
                f"dry run ({self.seconds:.1f} s): everything above was rolled back, nothing was changed"
            )
        else:
            lines.append(f"done in {self.seconds:.1f} s")
        return "\n".join(lines)
