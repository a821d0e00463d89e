"""The EU digital identity wallet as an eID route: verify PID presentations (``verify``) and speak
OpenID4VP 1.0 as a verifier (``connector``). No Flask."""
