# Parley: multi-stage build, runs as a non-root user; config and data are volumes.
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 builds from source when no prebuilt binary matches.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config/parley.example.yaml ./config/parley.example.yaml
RUN mkdir -p /data /app/config /app/data && chown -R node:node /data /app/config /app/data
USER node
VOLUME ["/data", "/app/config"]
ENV PARLEY_CONFIG=/app/config/parley.yaml
# XMPP (STARTTLS, direct TLS), HTTPS upload, built-in STUN.
EXPOSE 5222 5223 5443 3478/udp
# Mount a config at /app/config/parley.yaml with `dataDir: /data`; without one the example is used.
CMD ["sh", "-c", "[ -f \"$PARLEY_CONFIG\" ] || PARLEY_CONFIG=/app/config/parley.example.yaml; exec node dist/main.js start --config \"$PARLEY_CONFIG\""]
