// An independent client built from proto/ alone: @grpc/proto-loader with includeDirs
// ['proto'] (the vendored google/api files included), then GetInfo and Search on the
// server at argv[2]. Prints one JSON line: {"count": ..., "neighbors": [...ids]}.
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const root = path.resolve(__dirname, "..", "proto");
const definition = loader.loadSync("siamese_search/v1/search.proto", {
  includeDirs: [root],
  keepCase: true,
  longs: String,
  defaults: true,
});
const proto = grpc.loadPackageDefinition(definition);
const client = new proto.siamese_search.v1.SearchService(
  process.argv[2],
  grpc.credentials.createInsecure(),
);
const deadline = () => new Date(Date.now() + 30000);
client.GetInfo({}, { deadline: deadline() }, (error, info) => {
  if (error) throw error;
  client.Search(
    { text: "Fix crash when saving a file", k: 3 },
    { deadline: deadline() },
    (searchError, answer) => {
      if (searchError) throw searchError;
      console.log(JSON.stringify({ count: info.count, neighbors: answer.neighbors.map((n) => n.id) }));
      client.close();
    },
  );
});
