"""Privacy in the data plane: PII tokens, the pseudonymising pass that landing runs, and the encrypted PII
table behind crypto-shredding.

- `tokens`: the keyed hash (`tok_...`) that stands for a PII value under its tenant's key;
- `pseudonymise`: `pseudonymise_batch`, the vectorised pass over an Arrow batch that bronze calls;
- `pii_table`: raw values of recoverable fields, encrypted under the tenant key, and `reveal`.

Tenant keys themselves come from `shironzi.tenancy.keystore` (a local keystore or HashiCorp Vault);
destroying a tenant's key makes its rows in the PII table unreadable.
"""
