"""cityid as an OpenID4VCI 1.0 credential issuer (its own authorization server): the library card
as an SD-JWT VC in the citizen's wallet (docs/wallet.md). ``sdjwt`` builds and signs credentials
and status lists (no Flask, no database), ``store`` keeps cards, offers and status entries."""
