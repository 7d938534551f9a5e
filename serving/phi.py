"""Minimum necessary in the API: how a tenant caller names and sees PHI customer ids.

For a tenant whose contract declares `customer_id` as PHI (healthcare), every table holds the id encrypted
deterministically (`shironzi.privacy.phi`). A client still sends the clear id: the route encrypts it under
the tenant's PHI key and looks that up directly (no table read, no decryption of stored rows). What comes
back depends on the key: with the `phi:read` scope the clear id, otherwise its protected form (`phi_...`),
which is stable, so results still match up, and identifies no one without the tenant key. Audit events and
error messages carry the protected form only, so no PHI reaches the audit log through the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serving.deps import TenantAccess
from shironzi.privacy.phi import PhiCipher, customer_id_is_phi
from shironzi.tenancy.catalog import PHI_READ_SCOPE


@dataclass(frozen=True, slots=True)
class PhiView:
    """One caller's view of its tenant's customer ids: `cipher` is None when they are not PHI."""

    cipher: PhiCipher | None
    may_read_phi: bool

    @classmethod
    def of(cls, tenant_id: str, industry: str, scopes: Sequence[str]) -> PhiView:
        """KeyDestroyedError when the tenant's key is destroyed: its PHI can be neither found nor shown (a tenant
        without a key yet gets the one its first landing would create)."""
        cipher = PhiCipher.of(tenant_id, create=True) if customer_id_is_phi(industry) else None
        return cls(cipher, PHI_READ_SCOPE in scopes)

    def stored(self, customer_ids: Sequence[str]) -> list[str]:
        """The ids as the tables hold them (the same ids when they are not PHI)."""
        if self.cipher is None:
            return list(customer_ids)
        return [self.cipher.protect(cid) for cid in customer_ids]

    def shown(self, stored_id: str, *, sent: str | None = None) -> str:
        """A stored id as this caller may see it: clear with `phi:read` (`sent`, the id as the caller named it,
        when known: an id that was not found may not decrypt), else protected."""
        if self.cipher is None or not self.may_read_phi:
            return stored_id
        return sent if sent is not None else self.cipher.reveal(stored_id)


def phi_view(caller: TenantAccess) -> PhiView:
    return PhiView.of(caller.tenant_id, caller.tenant.industry, caller.principal.scopes)
