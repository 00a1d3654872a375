"""App Mesh's error types. A client reads the type from `x-amzn-ErrorType`."""


class AppMeshError(Exception):
    code = "InternalServerErrorException"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error(code: str, status: int) -> type[AppMeshError]:
    return type(code, (AppMeshError,), {"code": code, "status": status})


BadRequest = _error("BadRequestException", 400)
NotFound = _error("NotFoundException", 404)
Conflict = _error("ConflictException", 409)
ResourceInUse = _error("ResourceInUseException", 409)
LimitExceeded = _error("LimitExceededException", 400)
TooManyTags = _error("TooManyTagsException", 400)
TooManyRequests = _error("TooManyRequestsException", 429)
Forbidden = _error("ForbiddenException", 403)
ServiceUnavailable = _error("ServiceUnavailableException", 503)
InternalServerError = _error("InternalServerErrorException", 500)

# Raised by authentication, before an operation is known.
MissingAuthenticationToken = _error("MissingAuthenticationTokenException", 403)
IncompleteSignature = _error("IncompleteSignatureException", 400)
UnrecognizedClient = _error("UnrecognizedClientException", 403)
InvalidSignature = _error("InvalidSignatureException", 403)
UnknownOperation = _error("UnknownOperationException", 404)
