// Starts Swagger UI on the console's OpenAPI document (a file, not inline script: the CSP forbids those).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({ url: "/api/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
