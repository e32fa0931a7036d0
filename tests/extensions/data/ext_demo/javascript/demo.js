console.log("demo extension");
