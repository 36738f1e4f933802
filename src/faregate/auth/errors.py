"""Authentication and authorization failures."""

from faregate.errors import AuthenticationFailed, PermissionDenied


class InvalidKey(AuthenticationFailed):
    code = "invalid_api_key"


class MissingKey(AuthenticationFailed):
    code = "missing_api_key"


class RevokedKey(AuthenticationFailed):
    code = "revoked_api_key"


class ExpiredKey(AuthenticationFailed):
    code = "expired_api_key"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class AdminOnly(PermissionDenied):
    code = "admin_key_required"


class UnusableKeySettings(PermissionDenied):
    code = "invalid_key_settings"
